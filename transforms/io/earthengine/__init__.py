"""Earth Engine, behind one boundary.

- `client`: authentication, `computePixels` reads with retries, stratified sampling, the pixel source.
- `recipes`: the named image and label recipes (`s2-l1c-median:2020`, `worldcover`, ...).
- `assets`: predictions registered back as Earth Engine assets.
- `tables`: points exported as Earth Engine tables (an accuracy assessment's sample, for labelling).
"""
