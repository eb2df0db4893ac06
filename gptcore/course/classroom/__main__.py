"""``python -I -m gptcore.course.classroom --worker CONFIG``: a grading worker (internal)."""

import sys

from .worker import worker_main

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit("usage: python -m gptcore.course.classroom --worker CONFIG (internal)")
