"""The studies and the exercises: the learning-rate race and batch vs running statistics (``batch_and_lr``),
the chapter's exercises, where BN breaks (``norm_findings``), BN across devices. May import every wing below."""
