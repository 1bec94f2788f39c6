import sys

from clusterrun.cli import main

sys.exit(main())
