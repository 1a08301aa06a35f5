"""Running a job on a Ray cluster (`--ray`): the driver, the engine actors, the shared limiter."""
