"""What NNR units carry across the codec: the tensors of one NDU (layout) and the state a sequence of
incremental bitstreams shares (incremental); used by the decoder and the encoder alike."""
