// Whose transcripts the page believes: only the LiveNexus transcriber's. Any participant in the room can
// publish on the same topics, so a message is shown only when its sender is an agent participant (the kind
// LiveKit puts in the token, which only the API secret can mint) whose identity has the worker's prefix.

/** What the page knows about a sender. */
export interface Sender {
  identity: string;
  /** LiveKit's participant kind says "agent" (undefined where the SDK does not report a kind). */
  isAgent: boolean | undefined;
}

export function isTranscriber(sender: Sender | undefined, prefix: string): boolean {
  if (sender === undefined || !prefix) return false;
  return sender.identity.startsWith(prefix) && sender.isAgent !== false;
}
