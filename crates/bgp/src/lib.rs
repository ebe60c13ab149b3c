//! Sans-IO BGP-4: message codec, capabilities, attributes, session FSM, RIBs, decision process, policy, route reflection. No sockets, no clock.
