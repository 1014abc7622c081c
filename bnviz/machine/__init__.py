"""The machine: which device trains (cpu, cuda, mps) and how many threads, this laptop's address on its network,
and the ``BNVIZ_*`` settings a user sets in the environment. The ground floor: imports nothing of bnviz."""
