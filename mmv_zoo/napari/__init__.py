"""The napari plugin (`pip install "mmv_zoo[napari]"`): Zoo, Predict, Train and Evaluate widgets and
the BBBC007 sample data. The widgets call the library only (nothing the CLI cannot do), import the
heavy parts when first used, run models in worker threads and show errors as the CLI words them."""
