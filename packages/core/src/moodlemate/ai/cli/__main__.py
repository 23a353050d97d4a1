import sys

from moodlemate.ai.cli import main

sys.exit(main())
