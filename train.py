"""`python train.py experiment=train/<recipe>`: train a learned prior; see invlab/cli/train.py."""
from invlab.cli.train import main

if __name__ == "__main__":
    main()
