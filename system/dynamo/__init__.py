"""The store's pure DynamoDB data layer: errors, AttributeValues, expressions.

No I/O here: the API handlers of the node use these modules to validate
requests, evaluate conditions and apply updates to wire-form items.
"""
