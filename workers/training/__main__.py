"""`python -m workers.training SPEC --output DIR`: the trainer, as a worker starts it."""

import sys

from workers.training.entry import main

sys.exit(main())
