"""`stagewise view DIR`: a local web page for reading a run's results and traces (see command.py)."""
