"""``python -m moodlemate.ai``: the ``moodlemate-ai`` command."""

import sys

from moodlemate.ai.cli import main

sys.exit(main())
