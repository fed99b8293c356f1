"""Instance segmentation by spatial embeddings (EmbedSeg): the embedding head, the loss, the clustering."""
