"""The storing side: the database (``schema``), the rows a job carries (``rows``), the SQL
that writes, rolls up and sweeps them (``persist``) and the writer thread (``writer``). It
imports nothing of the receiving side."""
