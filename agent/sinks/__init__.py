"""Sinks: ship committed buffer records to a destination and acknowledge them in the buffer.

A sink reads batches from its own ``BufferReader`` (starting after its cursor), sends them,
and calls ``Buffer.ack`` only once the destination confirmed durable receipt, so a crash at any
point re-sends rather than loses. Each sink instance is driven by its single ``run()`` task and
owns its reader, HTTP session and retry state.
"""
