"""`python run.py solver=... task=...`: one reconstruction experiment; see invlab/cli/run.py."""
from invlab.cli.run import main

if __name__ == "__main__":
    main()
