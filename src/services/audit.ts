/** Writes audit events. Keys carry a unique suffix and are written create-only: no event overwrites another. */
import type { Logger } from "pino";
import type { ObjectStore } from "../clients/object-store.js";
import { serializeDocument, type AuditEventDocument } from "../domain/documents.js";
import { auditKey, type AuditEvent } from "../domain/keys.js";
import { formatGoTime, formatLocalMonth, formatLocalStamp } from "../domain/time.js";
import type { Clock } from "./context.js";

export interface AuditSubject {
  readonly app: string;
  readonly gitHash: string;
  readonly gitTime: string;
}

export class AuditLog {
  constructor(
    private readonly deps: { store: ObjectStore; clock: Clock; user: string; uniqueId: () => string; logger: Logger },
  ) {}

  /**
   * Lets the store find out now, alongside the caller's own work, whether the server honours
   * create-only writes (it asks once per process, a few requests). A long command that records its
   * event at the end calls this first, so the event costs one request when it is due. Failures
   * surface in record().
   */
  prepare(): void {
    this.deps.store.conditionalWritesHonoured().catch(() => undefined);
  }

  /**
   * Records one event. The change it describes has already happened, so a failure to record is
   * reported as a warning rather than undoing the change.
   */
  async record(event: AuditEvent, subject: AuditSubject, details: Record<string, unknown>): Promise<string | undefined> {
    const { store, clock, user, uniqueId, logger } = this.deps;
    const now = clock.now();
    const key = auditKey(subject.app, formatLocalMonth(now), formatLocalStamp(now), event, subject.gitHash, uniqueId());
    const document: AuditEventDocument = {
      event_type: event,
      timestamp: formatGoTime(now),
      user,
      app_name: subject.app,
      git_hash: subject.gitHash,
      git_time: subject.gitTime,
      details,
    };
    try {
      await store.putText(key, serializeDocument(document), { ifNoneMatch: true });
      logger.debug({ key }, "audit event recorded");
      return key;
    } catch (error) {
      logger.warn(`could not record the ${event} audit event at ${store.url(key)}: ${(error as Error).message}`);
      return undefined;
    }
  }
}
