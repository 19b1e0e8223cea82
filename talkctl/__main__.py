import sys

from talkctl.cli import main

sys.exit(main())
