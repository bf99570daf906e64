"""The harness for local networks of validator processes on 127.0.0.1.

`depnet up/down/status`, the multi-process tests and `depnet bench network` share it:
``start`` launches a node process, ``stop`` ends them, ``health`` tells whether a pid is
still our node and what it uses, ``wait`` polls a condition until a deadline, ``client``
is the one HTTP client for a node's API, ``localnet`` drives a throwaway network from
Python, ``load`` signs transfer load and ``bench`` measures throughput. Nothing here
prints or parses options: that is cli/commands/.
"""
