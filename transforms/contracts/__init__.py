"""The data contracts writer and reader share: the record schema, the manifest beside the records, the
label schemes (classes, values, colours) and their presets."""
