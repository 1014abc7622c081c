"""The normalisation layers, each read like its formula: BatchNorm from scratch and the paper's backward,
Batch Renorm, Ghost BN, Noisy BN, and the chapter's exercise variants. Imports only torch."""
