"""Train a LLaVE embedding model: `accelerate launch train.py training_args/<preset>.yaml [--key value ...]`."""

from llave_hf.cli.train import main


if __name__ == "__main__":
    main()
