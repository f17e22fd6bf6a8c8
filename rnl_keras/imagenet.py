"""ImageNet normalisation of the model's input: RGB on [0, 1], then ``(x - mean) / std``.

One definition of the mean and std (torchvision's, the convention of the paper's backbone), shared
by the data pipeline, the test-time transform, the exported serving graph and the input adapter of
Keras-weight models.
"""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
