"""Nizza split applications (paper §4.3; docs/NIZZA.md): the security-critical part of an
application as a small native L4 task, the rest a program in L⁴Linux that reaches it through
a capability (a hybrid process).

    protocol.py   SIGNER and VAULT, declared once
    signer.py     the trusted signer: an Ed25519 key, the digest and a PIN in its own
                  Nitpicker window (prompt.py), a signature only after the right PIN
    vault.py      the trusted vault: an AES-256-GCM key; L⁴Linux stores only ciphertext
    prompt.py     the signer's window: the document's digest above a PIN keypad
    nizza.c       the untrusted part's helper, a static hybrid Linux program
    build.py      the Linux root file system with the helper and the shell scripts
"""
