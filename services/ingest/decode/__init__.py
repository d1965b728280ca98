"""Decoding: serialized `DataEvent`s of a whole polled batch straight to columns.

`wire` walks the protobuf wire format of the batch (numba-compiled `kernels`, Arrow for
strings, upb for anything unusual); `columns` holds the result (`FlatEvents`).
"""
