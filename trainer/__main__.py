"""`python -m trainer train|tiny-model|export ...`, e.g. `accelerate launch -m trainer train ...`."""
import sys

from trainer.cli import main

sys.exit(main())
