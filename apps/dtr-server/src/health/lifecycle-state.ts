import { Injectable } from '@nestjs/common';

/** Whether this instance is draining for shutdown; readiness turns false first so balancers stop sending. */
@Injectable()
export class LifecycleState {
  private draining = false;

  startDraining(): void {
    this.draining = true;
  }

  get isDraining(): boolean {
    return this.draining;
  }
}
