"""Learning: backbones and models, embeddings, training, a round and its trainers, query strategies,
pseudo-labels, balancing, evaluation and the stopping advice."""
