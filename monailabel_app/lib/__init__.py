"""LayerSeg's MONAI Label app: infer, train and next-sample tasks around the `layerseg` CLI."""
