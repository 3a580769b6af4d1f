"""Serving images: build them offline from images/<variant>.Containerfile, export OCI archives, write SBOMs."""
