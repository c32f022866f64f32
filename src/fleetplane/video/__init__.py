"""Video: cameras and media (photos and clips) of the customer's devices."""
