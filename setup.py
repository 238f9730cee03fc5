"""The optional C half of services/log/merkle.py; everything else is in pyproject.toml.

services/log/_merkle.c hashes leaves and subtrees in bulk over the system's libcrypto, which is
what lets ``sigstead fsck`` replay a log at a million leaves a second. It is optional: without a
C compiler and OpenSSL's headers the install still succeeds, and merkle.py runs the same
functions in Python, more slowly (bench/bench_fsck.py prints both).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.log._merkle",
            sources=["services/log/_merkle.c"],
            libraries=["crypto"],
            optional=True,
        ),
        # fsck's hash replay on SQLite, stepped in C (services/audit/_replay.c): optional too.
        Extension(
            "services.audit._replay",
            sources=["services/audit/_replay.c"],
            libraries=["sqlite3", "crypto"],
            optional=True,
        ),
    ]
)
