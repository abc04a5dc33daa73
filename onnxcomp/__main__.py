import sys

from onnxcomp.cli import main

sys.exit(main())
