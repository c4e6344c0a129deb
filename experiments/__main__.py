import sys

from experiments._entry import main

sys.exit(main())
