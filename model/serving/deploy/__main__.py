import sys

from model.serving.deploy.command import main

if __name__ == "__main__":
    sys.exit(main())
