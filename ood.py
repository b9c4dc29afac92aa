"""`python ood.py detector=... pair=...`: OOD detection (AUROC); see invlab/cli/ood.py."""
from invlab.cli.ood import main

if __name__ == "__main__":
    main()
