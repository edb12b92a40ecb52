"""The graphc command line (see docs/cli.md)."""


def main(argv=None):
    raise SystemExit("graphc: the CLI is not built yet")
