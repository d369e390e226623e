"""metrics → report: the tables a run and a comparison show (``tables``) and their pictures (``plots``)."""
