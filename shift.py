"""`python shift.py --p <prior> --q <priors> ...`: distribution-shift KL; see invlab/cli/shift.py."""
from invlab.cli.shift import cli

if __name__ == "__main__":
    cli()
