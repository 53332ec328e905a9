"""A local server that speaks TensorFlow Serving's gRPC and REST APIs.

TensorFlow Serving's binary cannot be installed on the project's machines, so this
package serves real SavedModels with TensorFlow behind the same API, flags and
behaviour (``../shared/reference/tf-serving.md``). It is the model-server side
only: the bridge never imports it.
"""
