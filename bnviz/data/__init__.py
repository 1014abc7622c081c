"""The data: Fashion-MNIST found offline and checked (``fashion_mnist``), and the batches drawn from it
(``sampling``: seeded, or from k of the 10 classes). May import ``machine``."""
