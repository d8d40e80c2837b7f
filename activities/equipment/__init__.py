"""Equipment adapters behind an allow-list: cut and restore a customer's servers, ports and controllers.

``registry`` (which equipment exists, whose it is, where its secret is), ``adapter`` (the protocol
and its errors), one module per protocol (``redfish``, ``snmp``, ``webhook``), ``journal``
(the Postgres record and kill switches) and ``activities`` (the Temporal activities).
"""
