import sys

from whichway.cli import main

sys.exit(main())
