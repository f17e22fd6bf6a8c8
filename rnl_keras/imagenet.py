"""ImageNet normalisation of the model's input (RGB on [0, 1]), shared by data, export and tools."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
