"""What the whatsmeow engine knows of the line's groups: whether it is in one, and how each group
addresses its members.

A group's messages are keyed by their author, and WhatsApp wants the author as the group names its
members: ``<lid>@lid`` in a LID-addressed group, ``<phone>@s.whatsapp.net`` in a phone-addressed
one. A reaction, a quote or a read receipt naming a LID group's member by phone JID is accepted by
the server and never shown. The control plane knows authors by phone number, so here:
  - the group's addressing comes from its info (``get_group_info``, one IQ), kept for the engine's
    life; a JoinedGroup event replaces it (its GroupInfo comes along), a GroupInfo event (a change
    in the group) drops it so the next use asks again. Without those events subscribed, the first
    answer stays;
  - in a LID-addressed group the author's LID comes from whatsmeow's store (``get_lid_from_pn``: a
    local lookup, no IQ; the store learns the mapping from group metadata and usync), and the phone
    JID stands when the store does not know it.

What each group call costs: a reaction or a quote of another's message asks for the group's info
the first time only; a read receipt and a chat presence (typing) ask for it every time, because
whatsmeow sends those to any group without checking that the line is in it, and the IQ is how a
group the line is not in (or that does not exist) becomes ``not_in_group``. A typing burst in a
group is therefore as many IQs.
"""

import logging
import threading

from slotworker.engines import whatsmeow_send

log = logging.getLogger(__name__)


class Groups:
    def __init__(self):
        self._lid_addressed: dict[str, bool] = {}  # group id (no server) -> addressed by LID
        self._lock = threading.Lock()

    def learn(self, info) -> None:
        """A group's info (neonize's GroupInfo), as the group is now."""
        with self._lock:
            self._lid_addressed[info.JID.User] = whatsmeow_send.lid_addressed(info)

    def on_event(self, source: str, ev) -> None:
        """Keep up with the events the engine forwards (on neonize's thread: quick, no Go call)."""
        if source == "JoinedGroup":
            self.learn(ev.GroupInfo)
        elif source == "GroupInfo":
            with self._lock:
                self._lid_addressed.pop(ev.JID.User, None)

    def check_member(self, client, group) -> None:
        """Ask WhatsApp for the group's info: it fails for a group the line is not in (or that does
        not exist), with the texts whatsmeow_send.refusal reads as not_in_group."""
        self.learn(client.get_group_info(group))

    def member_address(self, client, group, phone: str) -> str:
        """The member ``phone`` as ``group`` (a JID) names its members."""
        with self._lock:
            lid_addressed = self._lid_addressed.get(group.User)
        if lid_addressed is None:
            self.check_member(client, group)
            with self._lock:
                lid_addressed = self._lid_addressed[group.User]
        if not lid_addressed:
            return whatsmeow_send.address(phone)
        try:
            lid = client.get_lid_from_pn(whatsmeow_send.jid(phone))
        except Exception as err:  # the store failing to answer: the phone JID rather than nothing
            log.warning("no LID for a group member from whatsmeow's store: %s", type(err).__name__)
            lid = None
        if lid is None or not lid.User:  # an unknown phone: the store answers an empty JID
            return whatsmeow_send.address(phone)
        return f"{lid.User}@{whatsmeow_send.LID_SERVER}"
