"""`python reproduce.py paper=<name> [scale=cpu|paper|smoke]`: one paper's table; see invlab/cli/reproduce.py."""
from invlab.cli.reproduce import main

if __name__ == "__main__":
    main()
