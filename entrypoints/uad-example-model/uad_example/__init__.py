"""uad-example-model: a convolutional autoencoder as a uad_plugins model plugin."""
