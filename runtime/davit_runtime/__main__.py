import sys

from davit_runtime.cli import main

sys.exit(main())
