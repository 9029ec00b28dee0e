"""Data: CT phantoms, DICOM series, windows; MRI masks, coil maps, fastMRI files."""
