"""The ``dunning`` command line: run the service (worker, API, dev stack, codec server), set up a
namespace, start and steer invoices, rebuild projections, flip equipment kill switches."""
