"The data: audio front-ends, file layouts, the synthetic and stamps scenes, the dataset loaders."
