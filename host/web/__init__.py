"""The host's web cabinets: the fleet manager's cabinet, the fleet API and the club member's
payment cabinet (:func:`host.web.app.create_app`, started by ``edgepos host serve``)."""
