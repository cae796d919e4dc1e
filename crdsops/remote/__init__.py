"""Other machines: hardened SSH (``ssh``), rsync over it (``rsync``), tasks on many hosts at
once (``fleet``) and copying a higher-tier server onto this one (``mirror``). The top library
layer: it may import every layer below it.
"""
