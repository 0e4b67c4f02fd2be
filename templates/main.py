"""Flex Template entry point of every terrabeam job (the image's FLEX_TEMPLATE_PYTHON_PY_FILE).

The launcher runs `python templates/main.py --terrabeam_job=<job> --<parameter>=<value> ...`;
`pipelines.launch.run_template` maps the parameters onto the job's options and runs it.
"""

import logging
import sys

from pipelines.launch import run_template

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    sys.exit(run_template(sys.argv[1:]))
